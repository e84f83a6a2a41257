"""gapkit: the curse-of-capacity-gap toolkit."""
