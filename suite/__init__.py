"""foresight's machinery: trunk, sizes, the LightningModule, data, CLI.

`suite.ObjectiveLM` and `suite.TaskData` load lazily, so `import objectives` (which needs `suite.errors`) does not
pull in Lightning."""

__all__ = ["ObjectiveLM", "TaskData"]


def __getattr__(name: str):
    if name == "ObjectiveLM":
        from suite.module import ObjectiveLM

        return ObjectiveLM
    if name == "TaskData":
        from suite.data import TaskData

        return TaskData
    raise AttributeError(f"module 'suite' has no attribute {name!r}")
