"""Network architectures: VQGAN parts, code transformer, CFT / CFA, Kalman gain, and KEEP."""

from .keep_arch import KEEP, PRESETS, KEEPConfig, KEEPOutput, KEEPState

__all__ = ["KEEP", "KEEPConfig", "KEEPOutput", "KEEPState", "PRESETS"]
