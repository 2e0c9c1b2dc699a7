"""The task suite: real tasks (objective x corpus x teacher) declared in `suite.yaml`, built and tabulated.

- `suite`: the YAML schema and its checks (`load_suite`, `TaskSuite`, `TaskSpec`);
- `build`: teacher directories, task recipes and trained supernets, cached per task spec;
- `table`: each task's arch -> fitness table (`TaskTable`), the archs every task of a space shares.

`scripts/build_suite.py` builds it and the shipped predictor; `scripts/bench_transfer.py`
runs the transfer benchmark on it.
"""

from metanas.tasks.suite import TaskSpec, TaskSuite, TeacherSpec, load_suite, suite_path

__all__ = ["TaskSpec", "TaskSuite", "TeacherSpec", "load_suite", "suite_path"]
