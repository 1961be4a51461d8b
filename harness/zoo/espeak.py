"""Synthetic speech for the zoo's audio test sets: Debian's espeak-ng voices speaking random English words.

:func:`espeak` runs ``espeak-ng`` (1.51; GPL-3.0+, the audio it produces is not
covered by its licence) and resamples its 22050 Hz output to 16 or 8 kHz with
``scipy.signal.resample_poly``. ``WORDS`` (common English words), ``LANGS``
(Latin-script languages whose phonetics are applied to them) and ``VARIANTS``
(espeak-ng voice variants) are what the VAD and speaker test sets draw from.
Install: ``apt-get install espeak-ng``.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np

SR = 16000

WORDS = """time people year way day man thing woman life child world school state family student
group country problem hand part place case week company system program question work government
number night point home water room mother area money story fact month lot right study book eye job
word business issue side kind head house service friend father power hour game line end member law
car city community name president team minute idea kid body information back parent face others
level office door health person art war history party result change morning reason research girl
guy moment air teacher force education foot boy age policy music market sense nation plan college
interest death experience effect class control care field development role effort rate heart drug
show leader light voice wife police mind price report decision son view relationship town road arm
difference value building action model season society tax director position player record paper
space ground form event official matter center couple site project activity star table need court
oil situation cost industry figure street image phone data picture practice piece land product
doctor wall patient worker news test movie north love support technology step baby computer type
attention film tree source organization hair window evidence population truth song ability
go say get make know think take see come want look use find give tell work call try ask need feel
become leave put mean keep let begin seem help talk turn start show hear play run move like live
believe hold bring happen write provide sit stand lose pay meet include continue set learn lead
understand watch follow stop create speak read allow add spend grow open walk win offer remember
consider appear buy wait serve die send expect build stay fall cut reach kill remain suggest raise
good new first last long great little own other old right big high different small large next early
young important few public bad same able quickly slowly today tomorrow always never often seven
twelve forty hundred blue green yellow bright quiet warm cold heavy simple strange beautiful""".split()

# Latin-script languages (their own phonetics applied to the word list) and voice variants.
LANGS = ["en-us", "en-gb", "en-gb-scotland", "en-029", "de", "fr-fr", "es", "it", "pt", "nl", "sv", "pl",
         "cs", "da", "fi", "ro", "hu", "id", "sk", "hr"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "klatt4", "Alex", "Andy", "Annie", "adam", "anika", "benjamin", "david", "ed", "edward",
            "grandma", "grandpa", "john", "linda", "max", "michel", "norbert", "pablo", "paul", "quincy", "rob",
            "robert", "steph", "travis", "victor", "zac", "belinda", "boris", "caleb", "aunty", "croak"]


def espeak(text: str, voice: str, speed: int, pitch: int, sr: int = SR) -> np.ndarray:
    """Speech from espeak-ng at ``sr`` Hz (16 or 8 kHz), float64 in [-1, 1]."""
    from scipy.signal import resample_poly

    require()
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", "100", "--stdout", text],
                         check=True, capture_output=True).stdout
    # RIFF header of espeak-ng's stdout is 44 bytes; 22050 Hz mono int16
    if wav[:4] != b"RIFF" or wav[36:40] != b"data":
        raise RuntimeError(f"espeak-ng -v {voice} wrote no 44-byte-header WAV to stdout (got {wav[:44]!r})")
    pcm = np.frombuffer(wav[44:], dtype="<i2").astype(np.float64) / 32768.0
    return resample_poly(pcm, 320, 441) if sr == 16000 else resample_poly(pcm, 160, 441)


def require() -> None:
    """Stop with the install command when ``espeak-ng`` is not on PATH."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not on PATH; install it with: apt-get install espeak-ng")


def version() -> str:
    """The installed espeak-ng's version, e.g. ``1.51`` (recorded in the metadata of models whose test set uses it)."""
    require()
    out = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True).stdout
    m = re.search(r"text-to-speech:\s*(\S+)", out)
    if m is None:
        raise RuntimeError(f"cannot read the version from espeak-ng --version: {out!r}")
    return m.group(1)
