"""Network definitions shipped with pgn-deploy (PyTorch; imported only where used).

``pgn_deploy.models.demo:DemoDeepLabV3Plus`` is the architecture of the demo checkpoints in
``export/models/``.
"""
