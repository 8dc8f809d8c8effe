"""Synthetic keyword-spotting data: espeak-ng voices in Google Speech Commands' layout."""

from kws_core.data.synth.dataset import SynthReport, generate_synthetic_dataset
from kws_core.data.synth.noise import make_background_noises
from kws_core.data.synth.speakers import Speaker, make_speakers

# The 35 words of Speech Commands v0.02, in the data set's documented order.
SPEECH_COMMANDS_WORDS: tuple[str, ...] = tuple(
    (
        "yes no up down left right on off stop go "
        "zero one two three four five six seven eight nine "
        "bed bird cat dog happy house marvin sheila tree wow "
        "backward forward follow learn visual"
    ).split()
)

__all__ = [
    "SPEECH_COMMANDS_WORDS",
    "Speaker",
    "SynthReport",
    "generate_synthetic_dataset",
    "make_background_noises",
    "make_speakers",
]
