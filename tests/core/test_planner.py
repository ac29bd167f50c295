"""Training defaults from the data: a floor of steps for small document sets, a ceiling for large ones."""

from __future__ import annotations

from core.finetune import planner

STARTER = 268_000_000


def _docs(rows: int, tokens: int, **kw: object) -> planner.Schedule:
    args: dict[str, object] = {"documents": True, "rows": rows, "tokens": tokens, "rows_per_step": 1,
                               "method_lr": 2e-4, "parameters": STARTER, "cores": 2, "epochs": None,
                               "max_steps": None, "lr": None}
    args.update(kw)
    return planner.schedule(**args)  # type: ignore[arg-type]


def test_a_small_document_set_gets_enough_steps_and_a_larger_learning_rate() -> None:
    s = _docs(7, 1500)
    assert s.epochs * 7 >= planner.DOC_STEP_FLOOR and s.epochs <= planner.DOC_MAX_EPOCHS
    assert s.lr == 2e-4 * planner.DOC_LR_FACTOR
    assert any("epochs" in r for r in s.reasons) and any("learning rate" in r for r in s.reasons)


def test_a_tiny_set_is_capped_in_epochs_so_it_is_not_parroted() -> None:
    assert _docs(1, 200).epochs == planner.DOC_MAX_EPOCHS


def test_a_large_document_set_gets_few_epochs_and_a_time_ceiling() -> None:
    s = _docs(20_000, 10_000_000, rows_per_step=8)
    assert s.epochs <= planner.DOC_MIN_EPOCHS
    seconds = planner.estimated_seconds(total_tokens=int(s.epochs * 10_000_000), parameters=STARTER, cores=2)
    assert seconds <= planner.TIME_CEILING_S * 1.01
    assert any("hours" in r for r in s.reasons)


def test_what_the_user_set_is_kept() -> None:
    s = _docs(7, 1500, epochs=2.0, lr=1e-3)
    assert (s.epochs, s.lr, s.max_steps) == (2.0, 1e-3, None)
    s = _docs(7, 1500, max_steps=5)
    assert s.max_steps == 5


def test_datasets_keep_three_epochs_and_the_methods_rate() -> None:
    s = _docs(50, 10_000, documents=False)
    assert (s.epochs, s.lr) == (3.0, 2e-4)


def test_rows_get_shorter_and_steps_smaller_for_little_text() -> None:
    assert planner.documents_row_length(1_500) == 128
    assert planner.documents_row_length(20_000) == 256
    assert planner.documents_row_length(100_000) == 512
    assert planner.documents_row_length(1_000_000) == 1024
    assert planner.documents_rows_per_step(7) == 1
    assert planner.documents_rows_per_step(10_000) == 8

