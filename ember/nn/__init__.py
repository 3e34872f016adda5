"""Layer 5: neural-network building blocks. `ember.nn.functional` holds the composite layers."""
from . import functional  # noqa: F401
from . import init  # noqa: F401
from .parameter import Parameter  # noqa: F401
from .module import Module  # noqa: F401
from .containers import ModuleDict, ModuleList, ParameterDict, ParameterList, Sequential  # noqa: F401
from .linear import Flatten, Identity, Linear, Unflatten  # noqa: F401
from .conv import Conv1d, Conv2d  # noqa: F401
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d  # noqa: F401
from .normalization import BatchNorm1d, BatchNorm2d, LayerNorm  # noqa: F401
from .dropout import Dropout  # noqa: F401
from .sparse import Embedding  # noqa: F401
from .activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh  # noqa: F401
from .activation import (CELU, ELU, SELU, Hardsigmoid, Hardswish, Hardtanh, LogSigmoid, Mish, PReLU,  # noqa: F401
                         ReLU6, Softplus, Softsign, Tanhshrink)
from .attention import MultiheadAttention  # noqa: F401
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, RNNCellBase  # noqa: F401
from . import utils  # noqa: F401
from .ctc import CTCLoss  # noqa: F401
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss  # noqa: F401
from .loss import (BCELoss, CosineEmbeddingLoss, HuberLoss, KLDivLoss, MarginRankingLoss,  # noqa: F401
                   SmoothL1Loss, SoftMarginLoss, TripletMarginLoss)
from .conv import Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d  # noqa: F401,E402
from .normalization import GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, RMSNorm  # noqa: F401,E402
from .pooling import AdaptiveMaxPool2d, MaxUnpool2d  # noqa: F401,E402
from .pooling import (AdaptiveAvgPool1d, AdaptiveAvgPool3d, AdaptiveMaxPool1d, AdaptiveMaxPool3d,  # noqa: F401,E402
                      AvgPool1d, AvgPool3d, LPPool1d, LPPool2d, LPPool3d, MaxPool1d, MaxPool3d, MaxUnpool1d,
                      MaxUnpool3d)
from .upsampling import (Fold, PixelShuffle, PixelUnshuffle, Unfold, Upsample,  # noqa: F401,E402
                         UpsamplingBilinear2d, UpsamplingNearest2d)
from .transformer import (Transformer, TransformerDecoder, TransformerDecoderLayer,  # noqa: F401,E402
                          TransformerEncoder, TransformerEncoderLayer)
