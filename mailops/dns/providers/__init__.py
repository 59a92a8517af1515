"""DNS providers behind two small interfaces (see ``base``)."""
