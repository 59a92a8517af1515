"""Day-two operations on the mail hosts: queue, log statistics, bounces, warm-up."""
