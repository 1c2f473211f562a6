"""The trader's console: the dashboard (is every follower in sync, and if not, why and
what to click), decisions as sentences, copy latency, and the admin site around them.

Pure helpers (sentences, latency maths, the SVG) import no Django; the selectors read the
database; the views only render.
"""
