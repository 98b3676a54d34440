"""CNN features of a dataset's photos: the extraction pipeline and the on-disk cache it fills."""
