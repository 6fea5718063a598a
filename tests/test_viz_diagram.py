"""The MAML loop diagram: one inner loop per task, the outer update drawn back to θ."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from mlcourse.viz import maml_loop_diagram  # noqa: E402


@pytest.mark.parametrize("tasks", [1, 3, 5])
def test_one_inner_loop_and_one_query_loss_per_task(tasks):
    ax = maml_loop_diagram(tasks)
    texts = [t.get_text() for t in ax.texts]
    assert sum("inner loop, task" in t for t in texts) == tasks
    assert sum("query loss" in t for t in texts) == tasks
    assert any(t.startswith("outer loop") for t in texts)
    plt.close(ax.figure)


@pytest.mark.parametrize("tasks", [0, 2.5, "3"])
def test_bad_task_counts_are_refused(tasks):
    with pytest.raises(ValueError, match="tasks must be an int"):
        maml_loop_diagram(tasks)
