"""The tree's bookkeeping: where things live (layout), locks and space (disk), records,
verify, adopt, and the plan of a build."""
