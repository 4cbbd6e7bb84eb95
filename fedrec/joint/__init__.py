"""The joint model: export (adapter merged into the backbone, per-platform indexes) and scoring."""

from fedrec.joint.export import export_joint_model, export_run
from fedrec.joint.mmr import mmr
from fedrec.joint.recommender import Recommendation, Recommender

__all__ = ["Recommendation", "Recommender", "export_joint_model", "export_run", "mmr"]
