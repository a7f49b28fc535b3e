"""Transparent mode (Linux): where to listen and what to redirect (plan.py), the nftables table
(rules.py), the sockets' marks, the original destination and running ``nft`` (netfilter.py), and
what the kernel's ruleset does to mail right now (status.py)."""
