"""Card templates and prose, one folder per collection (installed as ``hfmed.dataset_cards``); see hfmed.registry."""
