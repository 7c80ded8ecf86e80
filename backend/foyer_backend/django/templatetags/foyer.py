"""`{% load foyer %}` then `{% foyer_config "orders:venue-1" read_seq=True %}`: the page's
client configuration as a `<script type="application/json" id="foyer-config">` element
(`client_config()`), read in the page with
`JSON.parse(document.getElementById("foyer-config").textContent)`."""
from django import template
from django.utils.html import json_script

from .. import client_config

register = template.Library()


@register.simple_tag
def foyer_config(channel, since=None, read_seq=False, element_id="foyer-config"):
    return json_script(client_config(channel, since, read_seq=read_seq), element_id)
