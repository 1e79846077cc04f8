"""The auditing room: gather the evidence under a coverage policy and a budget, conclude, and
merge the results of shards.

- :mod:`.options`: what an audit is asked (:class:`AuditOptions`) and the coverage policy
  (:class:`CoveragePolicy`): the one place the policy is stated;
- :mod:`.gather`: :func:`audit`, and the gathering of each kind of evidence;
- :mod:`.time_budget`: the time budget (``--budget``) and what each phase can afford;
- :mod:`.coverage`: what an audit covered (:class:`Coverage`), and its JSON form;
- :mod:`.result`: :class:`AuditResult`;
- :mod:`.conclude`: violations, mode, facts and verdict from the evidence alone, the
  certificate's cross-check, and :func:`merge` of shards;
- :mod:`.shard_file`: the JSON format of a shard's evidence (``--shard``, ``merge``).
"""

from properties.auditing.conclude import conclude, merge
from properties.auditing.gather import audit
from properties.auditing.options import CHECKS, AuditOptions, CoveragePolicy
from properties.auditing.result import AuditResult

__all__ = [
    "CHECKS",
    "AuditOptions",
    "AuditResult",
    "CoveragePolicy",
    "audit",
    "conclude",
    "merge",
]
