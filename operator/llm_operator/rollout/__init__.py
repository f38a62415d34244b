"""Pure rollout planners: observed revision facts in, replicas per revision and deletions out.

One module per strategy, in the style of Argo Rollouts (`rolling.py` today; canary and analysis later). Nothing
here does I/O, so every planner is tested step by step against a simulated cluster (tests/operator).
"""

from llm_operator.rollout.rolling import Plan, RevisionState, plan

__all__ = ["Plan", "RevisionState", "plan"]
