"""Weight converters: torch VGG-Face / torchvision VGG-16 and Keras HDF5 to Orbax + model card."""
