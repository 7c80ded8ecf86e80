#!/usr/bin/env python
"""The Django project that tests/django_e2e.py drives against a real gateway. For a look by
hand: export the settings shopsite/settings.py reads, then `python manage.py runserver`."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shopsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
