"""Instruction pretraining of the SelfTeachingAdapter (the language path)."""
