"""Rithmic (R|Protocol): the venue most prop-firm futures accounts trade on.

`credentials` is the login's form (the system, the gateway, the user, the password and the
app name Rithmic approved for its user).
"""
