"""The auditing room: gather the evidence under a coverage policy and a budget, conclude, and
merge the results of shards.

- :mod:`.gather`: :func:`audit`, the coverage policy, and the gathering of each evidence;
- :mod:`.time_budget`: the time budget (``--budget``) and what each phase can afford;
- :mod:`.shard_file`: the JSON format of a shard's evidence (``--shard``, ``merge``).
"""

from properties.auditing.gather import CHECKS, AuditResult, audit, conclude, merge

__all__ = ["CHECKS", "AuditResult", "audit", "conclude", "merge"]
