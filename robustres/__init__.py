"""robustres: the step-factor study of "Towards Robust ResNet" (Zhang et al., IJCAI 2019) as a tool."""

__version__ = "0.1.0"
