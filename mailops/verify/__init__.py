"""`mailops verify`: DNS, server, security-from-outside and live-send checks, as data."""
