"""Deciding: the one choice rule (``rule``), budgets (``budget``), the held-budget controller
(``hold``, its state file in ``hold_state``), exploration (``explore``) and the one decision loop
(``loop``) that ``Router.route``, ``online.replay`` and the tests share.

Kept empty of imports so that ``predictors`` (which needs ``rule``) does not load the rest."""
