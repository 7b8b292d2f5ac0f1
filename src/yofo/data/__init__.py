"""Dataset readers, clip sampling, augmentation and the synthetic benchmark."""
