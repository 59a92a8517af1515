"""DNS: the records an inventory needs, planned and synced through provider APIs."""
