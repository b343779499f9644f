"""Face analysis: the shared face types, image reading, alignment, and the dlib, InsightFace and torch FR backends."""
