"""The MiniLM zoo model's sentence test set (harness/zoo/sentence_data.py): larger sets than the default."""
from harness.zoo.sentence_data import sentences


def test_more_sentences_than_the_default_and_the_default_is_their_prefix():
    # 1 100 reaches docstrings of classes whose __doc__ is a slot descriptor, not a string (a crash before)
    many = sentences(1100)
    assert len(many) == 1100 and len(set(many)) == 1100
    assert all(5 <= len(s.split()) <= 40 and s[0].isupper() and s[-1] in ".!?" for s in many)
    assert sentences(512) == many[:512]
