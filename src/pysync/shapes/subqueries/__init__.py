"""Shapes whose WHERE has ``IN (SELECT ...)``: the manager (every dependency, each
transaction's part), a dependency (a subquery's rows and values), the views a dependent
sees of them, a subquery shape's move-in / move-out, and its tags."""
