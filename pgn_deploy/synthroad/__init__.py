"""SynthRoad: a seeded generator of street scenes with out-of-distribution objects (a data source).

* :mod:`~pgn_deploy.synthroad.generator`: ``generate_frame`` (image, train ids, OoD mask);
* :mod:`~pgn_deploy.synthroad.scene`, :mod:`~pgn_deploy.synthroad.ood_objects`: what is drawn;
* :mod:`~pgn_deploy.synthroad.canvas`: the camera and the labelled canvas;
* :mod:`~pgn_deploy.synthroad.classes`: Cityscapes classes as SynthRoad uses them;
* :mod:`~pgn_deploy.synthroad.layouts`: frames written in the public benchmarks' disk layouts.
"""
