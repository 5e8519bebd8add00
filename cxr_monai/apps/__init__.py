"""Applications: what only one seed system needs (its transforms, losses, trainer, inference and evaluation),
built on the package's generic engines, handlers, data layer and reports."""
