"""The abuse rules over access rows, their incremental evaluation after each load, and the
incidents they open."""
