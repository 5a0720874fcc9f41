"""Workflows for ``taskbus flow``: workflow files (phases, rules, templates), their loader,
the task store and the engine that runs them.

Nothing is imported here so that ``import task.flow.rule`` stays cheap; import the modules:
``task.flow.workflow`` (``Phase``, ``Workflow``), ``task.flow.rule`` (``Rule``,
``parse_rule``, ``read_meta_file``), ``task.flow.file_glob`` (``glob_regex``),
``task.flow.template`` (``render``, ``MissingMeta``), ``task.flow.workflow_file`` (one file's
validation), ``task.flow.loader`` (``load_workflows``, ``LoadResult``, ``WorkflowSet``).
"""

__all__: list[str] = []
