"""Recorded LazyFrame steps and the small expression helpers the query plans share."""

import polars as pl


class Steps:
    """LazyFrame steps recorded once and replayed on each chunk's lines: the expression trees
    cost a few hundred microseconds of Python to build, a fixed cost per chunk otherwise."""

    def __init__(self, steps: tuple[tuple[str, tuple[object, ...]], ...] = ()) -> None:
        self.steps = steps

    def _then(self, method: str, *args: object) -> "Steps":
        return Steps((*self.steps, (method, args)))

    def with_columns(self, *exprs: pl.Expr | str) -> "Steps":
        return self._then("with_columns", *exprs)

    def select(self, *exprs: pl.Expr | str) -> "Steps":
        return self._then("select", *exprs)

    def filter(self, predicate: pl.Expr) -> "Steps":
        return self._then("filter", predicate)

    def cast(self, schema: dict[str, pl.DataType]) -> "Steps":
        return self._then("cast", schema)

    def __call__(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        for method, args in self.steps:
            frame = getattr(frame, method)(*args)
        return frame


def struct_field(struct: str, name: str) -> pl.Expr:
    return pl.col(struct).struct.field(name)


def nonempty(col: pl.Expr) -> pl.Expr:
    return pl.when(col != "").then(col)
