"""The training engine: model, routers, dispatch, precision, ensembles, trainer,
statistics. torch + numpy; never Qt."""
