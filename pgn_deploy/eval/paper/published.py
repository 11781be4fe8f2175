"""The published numbers of the PGN paper (Maag and Riedlinger), printed beside ours for comparison.

Tables 2 and 3 (OoD segmentation, SegmentMeIfYouCan protocol, WideResNet38 DeepLabV3+ on
Cityscapes; percent) per dataset kind, and Table 1 (Cityscapes val, ECE and AuSE as
published) for both backbones. Row keys are our map names where one exists.
"""
from __future__ import annotations

OOD_COLUMNS = ("AuPRC", "FPR95", "sIoU", "PPV", "mean_F1")

OOD_TABLES: dict[str, dict[str, tuple[float, ...]]] = {
    "laf_noknown": {  # Table 2, LostAndFound test-NoKnown
        "Ensemble": (2.9, 82.0, 6.7, 7.6, 2.7),
        "MC Dropout": (36.8, 35.6, 17.4, 34.7, 13.0),
        "msp": (30.1, 33.2, 14.2, 62.2, 10.3),
        "entropy": (52.0, 30.0, 40.4, 53.8, 42.4),
        "pgn_oh_p0.5": (64.9, 18.4, 48.3, 50.0, 46.9),
        "pgn_uni_p0.5": (69.3, 9.8, 50.0, 44.8, 45.4),
    },
    "road_obstacle21": {  # Table 2, RoadObstacle21
        "Ensemble": (1.1, 77.2, 8.6, 4.7, 1.3),
        "MC Dropout": (4.9, 50.3, 5.5, 5.8, 1.1),
        "msp": (15.7, 16.6, 19.7, 15.9, 6.3),
        "entropy": (20.6, 16.3, 21.4, 19.5, 10.4),
        "pgn_oh_p0.5": (18.8, 14.8, 22.1, 16.5, 9.2),
        "pgn_uni_p0.5": (16.5, 19.7, 19.5, 14.8, 7.4),
    },
    "fishyscapes_laf": {  # Table 3, Fishyscapes LostAndFound
        "Ensemble": (0.3, 90.4, 3.1, 1.1, 0.4),
        "MC Dropout": (14.4, 47.8, 4.8, 18.1, 4.3),
        "msp": (5.6, 40.5, 3.5, 9.5, 1.8),
        "entropy": (14.0, 39.3, 8.0, 17.5, 7.7),
        "pgn_oh_p0.5": (22.8, 35.5, 12.1, 27.3, 14.1),
        "pgn_uni_p0.5": (26.9, 36.6, 14.8, 29.6, 16.5),
    },
    "road_anomaly21": {  # Table 3, RoadAnomaly21
        "Ensemble": (17.7, 91.1, 16.4, 20.8, 3.4),
        "MC Dropout": (28.9, 69.5, 20.5, 17.3, 4.3),
        "msp": (28.0, 72.1, 15.5, 15.3, 5.4),
        "entropy": (31.6, 71.9, 15.7, 18.4, 4.2),
        "pgn_oh_p0.5": (39.3, 66.5, 23.1, 21.5, 7.8),
        "pgn_uni_p0.5": (42.8, 56.4, 25.8, 21.8, 9.7),
    },
}
OOD_SOURCES = {
    "laf_noknown": "Table 2 (LostAndFound test-NoKnown)",
    "road_obstacle21": "Table 2 (RoadObstacle21)",
    "fishyscapes_laf": "Table 3 (Fishyscapes LostAndFound)",
    "road_anomaly21": "Table 3 (RoadAnomaly21)",
}

TABLE1_COLUMNS = ("ECE WideResNet", "AuSE WideResNet", "ECE SEResNeXt", "AuSE SEResNeXt")
TABLE1: dict[str, tuple[float, ...]] = {  # Table 1, Cityscapes val; AuSE as the published code computes it
    "msp": (0.0017, 0.0277, 0.0032, 0.0327),
    "entropy": (0.0063, 0.0642, 0.0066, 0.0623),
    "pgn_oh_p2": (0.0019, 0.0268, 0.0039, 0.0365),
    "pgn_uni_p0.1": (0.0186, 0.0784, 0.0346, 0.0427),
}
