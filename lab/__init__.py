"""The lab: throw-away hosts on this machine (network namespaces + systemd-nspawn) for the lab tests, the benches and `make lab`.

    lab/subnets.py          the one table of lab prefixes and their 10.213.x ranges
    lab/hosts.py            the hosts themselves: namespaces, the switch, nspawn over an overlay of /
    lab/stack.py            the stack a lab is converged with (a real stack file's settings, the lab's hosts and keys)
    lab/backup.py           the backup lab's stack and its data, database and offsite server
    lab/command_provider.py pulumi-command 1.2.1's connection semantics, to run the program's commands in a lab
    lab/__main__.py         `python -m lab up|down|status`
"""
