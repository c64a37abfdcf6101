"""The prompt list for the tokenizer golden test: hand-picked hard cases plus generated variety."""
import itertools

HAND = [
    "a photo of a cat", "A PHOTO OF A DOG", "  leading and trailing spaces  ", "tabs\tand\nnewlines\r\nmixed",
    "a photo of Earth from the ISS", "astronaut's helmet", "it's, you're, we've, I'm, they'll, he'd",
    "don't stop", "ROCK'N'ROLL", "hello, world!", "what?!?!", "...ellipsis...", "semi;colon:colon",
    "(parentheses) [brackets] {braces}", "quotes \"double\" and 'single'", "back`tick`", "a/b\\c|d",
    "100% cotton", "$19.99 price tag", "3.14159", "1,000,000 stars", "2024-05-17", "12:30pm",
    "phone 555-0199", "#hashtag @mention", "email me at someone@example.com", "https://example.com/a?b=c&d=e",
    "C++ and C# code", "x^2 + y^2 = z^2", "~tilde~", "under_score_words", "hyphen-ated-words",
    "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e", "na\u00efve fa\u00e7ade", "stra\u00dfe in M\u00fcnchen", "\u00c5ngstr\u00f6m",
    "\u65e5\u672c\u306e\u5bff\u53f8", "\u4e2d\u6587\u6807\u9898", "\ud55c\uad6d\uc5b4 \ubb38\uc7a5",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u03b3\u03c1\u03ac\u03bc\u03bc\u03b1\u03c4\u03b1",
    "\u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442", "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "\u05e2\u05d1\u05e8\u05d9\u05ea", "\u0939\u093f\u0928\u094d\u0926\u0940", "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22",
    "emoji \U0001F431\U0001F680\U0001F30D", "flags \U0001F1EF\U0001F1F5", "family \U0001F468\u200d\U0001F469\u200d\U0001F467",
    "\u201ccurly double quotes\u201d", "\u2018curly single\u2019 and don\u2019t", "ligature \ufb01sh and \ufb02ower",
    "fullwidth \uff21\uff22\uff23 \uff11\uff12\uff13", "em\u2014dash and en\u2013dash", "bullet \u2022 point",
    "degrees 30\u00b0C", "\u00bd half and \u00bc quarter", "superscript x\u00b2", "trademark\u2122 and \u00a9 2020",
    "&amp; html &lt;tag&gt; &quot;entities&quot;", "double &amp;amp; escaped", "non\u00a0breaking\u00a0space",
    "zero\u200bwidth", "combining e\u0301 accent", "MiXeD CaSe TeXt", "ALL CAPS SHOUTING!!!", "lowercase only",
    "<|startoftext|> inside", "ends with <|endoftext|>", "", " ", "a", "I", "?", "0", "00000", "123456789",
    "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "a photo of " + "very " * 60 + "long text",
    " ".join(f"word{i}" for i in range(120)),
    "packaged product on a white background", "unpackaged loose item", "product render, 3D", "lifestyle shot",
    "a blurry photo", "a screenshot of a phone", "a meme with text", "an illustration of a dragon",
    "mission control room", "earth and moon", "spacewalk outside the station", "a porthole view",
    "Yu-Gi-Oh! trading card", "LOB-EN001 Blue-Eyes White Dragon", "ultra rare (UR)", "secret rare",
]

SUBJECTS = ["cat", "dog", "astronaut", "rocket", "coffee cup", "bicycle", "mountain", "city skyline",
            "bowl of soup", "trading card", "cardboard box", "old photograph", "sunset", "passport photo"]
TEMPLATES = ["a photo of a {}.", "a blurry photo of the {}", "A close-up of a {}!", "{}s in the wild",
             "an illustration of a {}, digital art", "the {} #{}", "{} ({} of 10)", "a {}-shaped object?"]


def prompts():
    out = list(HAND)
    for i, (t, s) in enumerate(itertools.product(TEMPLATES, SUBJECTS)):
        out.append(t.format(s, i) if t.count("{}") == 2 else t.format(s))
    return out
