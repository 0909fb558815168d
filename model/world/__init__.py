"""The embedded demo world: generated videos of scenes whose objects and sounds are known."""
from model.world.generate import WorldSummary, generate_world
from model.world.truth import FrameTruth, ObjectTruth, find_world_dir, frame_truth, video_truth

__all__ = ["FrameTruth", "ObjectTruth", "WorldSummary", "find_world_dir", "frame_truth", "generate_world",
           "video_truth"]
