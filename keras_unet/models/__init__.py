from keras_unet.models.unet import UNet

__all__ = ["UNet"]
