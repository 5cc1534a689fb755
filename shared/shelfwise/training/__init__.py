"""Training: interaction data, the candidate models, the hyper-parameter search and the batch job.

One module per algorithm (``popularity``, ``itemknn``, ``mf``); each model fits on
:class:`~shelfwise.training.data.Interactions`, scores users in numpy (the training-side
reference) and exports the ONNX graph of docs/contracts.md through ``shelfwise.onnx_export``.
"""
