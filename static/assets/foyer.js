// Foyer browser client (see issue 5).
