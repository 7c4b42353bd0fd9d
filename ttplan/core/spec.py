"""Layer geometry as `torch.nn.Conv2d` understands it (and `nn.Linear` as a 1x1 conv on 1x1)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ttplan.errors import TTPlanError

#: `nn.Conv2d`'s padding modes; a TT layer pads as they do (`ConvSpec.explicit_pad`)
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """An int or a pair, as torch accepts for kernel_size, stride, ...; anything else is an error."""
    if isinstance(value, bool):
        raise TTPlanError(f"{name}={value!r}: expected an int or a pair of ints")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return (int(value[0]), int(value[1]))
    raise TTPlanError(f"{name}={value!r}: expected an int or a pair of ints")


def same_padding(kernel_size: tuple[int, int], dilation: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """`padding='same'` as torch pads it: `d·(k-1)//2` before each axis and the rest after, i.e. (padding, extra
    padding after); an even window `d·(k-1)` pads one more pixel at the bottom and right."""
    totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
    before = tuple(total // 2 for total in totals)
    return before, tuple(total - 2 * b for total, b in zip(totals, before))  # type: ignore[return-value]


@dataclass(frozen=True)
class ConvSpec:
    """Geometry of one conv layer; `linear=True` marks an `nn.Linear` seen as a 1x1 conv on a rows x 1 map.

    `padding` pads both sides of an axis; `extra_padding` pads that many more pixels after it (bottom, right), as
    torch's `padding='same'` does for an even window; `padding_mode` is `nn.Conv2d`'s (what the padded pixels hold).
    """

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    input_size: tuple[int, int] = (32, 32)
    groups: int = 1
    bias: bool = False
    linear: bool = False
    extra_padding: tuple[int, int] = (0, 0)
    padding_mode: str = "zeros"

    @classmethod
    def make(
        cls,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        input_size: int | tuple[int, int] = 32,
        groups: int = 1,
        bias: bool = False,
        padding_mode: str = "zeros",
        extra_padding: int | tuple[int, int] = 0,
    ) -> ConvSpec:
        """Build and validate a spec from torch-style arguments (ints or pairs; `padding` also 'same' or 'valid',
        resolved as torch pads)."""
        kernel, dilation = _pair(kernel_size, "kernel_size"), _pair(dilation, "dilation")
        extra = _pair(extra_padding, "extra_padding")
        if padding == "valid":
            padding = 0
        elif padding == "same":
            if extra != (0, 0):
                raise TTPlanError(f"padding='same' with extra_padding={extra}: 'same' decides the extra padding")
            if _pair(stride, "stride") != (1, 1):
                raise TTPlanError(f"padding='same' with stride={stride}: torch supports 'same' for stride 1 only")
            padding, extra = same_padding(kernel, dilation)
        spec = cls(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel,
            stride=_pair(stride, "stride"),
            padding=_pair(padding, "padding"),  # type: ignore[arg-type]
            dilation=dilation,
            input_size=_pair(input_size, "input_size"),
            groups=groups,
            bias=bias,
            extra_padding=extra,
            padding_mode=padding_mode,
        )
        spec.validate()
        return spec

    @classmethod
    def make_linear(cls, in_features: int, out_features: int, bias: bool = False, rows: int = 1) -> ConvSpec:
        """An `nn.Linear` as a 1x1 conv on a `rows` x 1 feature map: one 'pixel' per row it is applied to.

        `rows` is the product of the input's leading dimensions per sample (T for a `(B, T, F)` input, else 1).
        """
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
            raise TTPlanError(f"rows={rows!r}: expected a positive int (the rows a linear layer sees per sample)")
        spec = cls(in_features, out_features, (1, 1), (1, 1), (0, 0), (1, 1), (rows, 1), 1, bias, True)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Reject what `nn.Conv2d` would reject or what ttplan cannot plan, in one line.

        Grouped convs are valid specs (their dense cost is counted); only TT formats refuse them.
        """
        for name in ("in_channels", "out_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise TTPlanError(f"{name}={value!r}: expected a positive int")
        groups = self.groups
        if (not isinstance(groups, int) or isinstance(groups, bool) or groups < 1
                or self.in_channels % groups or self.out_channels % groups):
            raise TTPlanError(
                f"groups={groups!r}: expected a positive int dividing in_channels={self.in_channels} "
                f"and out_channels={self.out_channels}"
            )
        for name in ("kernel_size", "stride", "dilation", "input_size"):
            pair = getattr(self, name)
            if min(pair) <= 0:
                raise TTPlanError(f"{name}={pair}: every entry must be a positive int")
        if min(self.padding) < 0:
            raise TTPlanError(f"padding={self.padding}: entries must be >= 0")
        if min(self.extra_padding) < 0:
            raise TTPlanError(f"extra_padding={self.extra_padding}: entries must be >= 0")
        if self.padding_mode not in PADDING_MODES:
            raise TTPlanError(f"padding_mode={self.padding_mode!r}: expected one of {', '.join(PADDING_MODES)}")
        for axis in (0, 1):
            reach = self.dilation[axis] * (self.kernel_size[axis] - 1) + 1
            padded = self.input_size[axis] + 2 * self.padding[axis] + self.extra_padding[axis]
            if reach > padded:
                raise TTPlanError(
                    f"kernel_size={self.kernel_size} with dilation={self.dilation}: the window spans "
                    f"{reach} pixels but the padded input is only {padded} along axis {axis}; "
                    f"use a kernel of at most {padded} there"
                )

    @cached_property
    def output_size(self) -> tuple[int, int]:
        """Output (H', W'), as `torch.nn.Conv2d` computes it."""
        return tuple(
            (self.input_size[a] + 2 * self.padding[a] + self.extra_padding[a]
             - self.dilation[a] * (self.kernel_size[a] - 1) - 1)
            // self.stride[a]
            + 1
            for a in (0, 1)
        )  # type: ignore[return-value]

    @cached_property
    def explicit_pad(self) -> tuple[int, int, int, int] | None:
        """`F.pad`'s (left, right, top, bottom) where `conv2d` cannot pad as the layer does (extra padding after an
        axis, or a padding mode other than zeros), else None: `conv2d` pads `padding` itself."""
        if self.extra_padding == (0, 0) and self.padding_mode == "zeros":
            return None
        (ph, pw), (eh, ew) = self.padding, self.extra_padding
        return (pw, pw + ew, ph, ph + eh)

    @property
    def pad_mode(self) -> str:
        """`F.pad`'s name of `padding_mode` (zeros is `constant`)."""
        return "constant" if self.padding_mode == "zeros" else self.padding_mode

    @cached_property
    def window(self) -> int:
        """K = k_h * k_w."""
        return self.kernel_size[0] * self.kernel_size[1]

    @cached_property
    def in_pixels(self) -> int:
        """H * W."""
        return self.input_size[0] * self.input_size[1]

    @cached_property
    def out_pixels(self) -> int:
        """H' * W'."""
        h, w = self.output_size
        return h * w

    @cached_property
    def kernel_elements(self) -> int:
        """Elements of the dense kernel `[O, I/groups, k_h, k_w]`."""
        return self.out_channels * (self.in_channels // self.groups) * self.window

    def dense_macs(self, batch: int = 1) -> int:
        """MACs of the dense conv: B * H'W' * O * (I/groups) * K (bias adds are not MACs). The one count of it."""
        return batch * self.out_pixels * self.kernel_elements

    def dense_params(self) -> int:
        """Elements of the dense kernel, plus the bias if present. The one count of it."""
        return self.kernel_elements + (self.out_channels if self.bias else 0)

    def describe(self) -> str:
        """A one-line summary like `128->256 3x3 s2 p1 28x28->14x14`."""
        if self.linear:
            rows = self.in_pixels
            return f"linear {self.in_channels}->{self.out_channels}" + (f" x{rows} rows" if rows > 1 else "")
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        (h, w), (oh, ow) = self.input_size, self.output_size
        stride = f" s{sh}" if sh == sw else f" s{sh}x{sw}"
        (eh, ew) = self.extra_padding
        sides = [f"{p}" if e == 0 else f"{p}:{p + e}" for p, e in ((ph, eh), (pw, ew))]  # before:after
        pad = f" p{sides[0]}" if sides[0] == sides[1] else f" p{sides[0]}x{sides[1]}"
        mode = "" if self.padding_mode == "zeros" else f" {self.padding_mode}"
        dil = "" if self.dilation == (1, 1) else f" d{self.dilation[0]}x{self.dilation[1]}"
        return f"{self.in_channels}->{self.out_channels} {kh}x{kw}{stride}{pad}{mode}{dil} {h}x{w}->{oh}x{ow}"
