"""Server checks shipped with mailops, written for pytest-testinfra.

Run them directly against an inventory:

    pytest --pyargs mailops.checks --hosts=ansible://all --ansible-inventory=inventories/lab

Each module covers one role's promises; expected values come from the host's
Ansible variables (the inventory), so the same checks fit any deployment.
"""
