"""gen_kwargs parse exactly as lm-evaluation-harness 0.4.13 parses them."""

import math

import pytest
from flageval.api.genkwargs import coerce_value, parse_gen_kwargs, to_request_fields
from lm_eval.utils import handle_arg_string, simple_parse_args_string

WELL_FORMED = [
    "",
    "   ",
    "temperature=0.6,top_k=20,top_p=0.95,min_p=0,max_gen_toks=16000",
    "temperature=0,do_sample=False",
    "do_sample=true,temperature=TRUE",
    "seed=-1,presence_penalty=-0.5,frequency_penalty=+1",
    "max_gen_toks=1e3,eps=2.5E-4,big=1_000",
    "stop=None,other=none,third=NONE",
    "name='123',other=\"456\",mixed='abc\"",
    "until='Question:'",
    "until=Question:",
    "x=inf,y=-inf,z=nan",
    "a=1,,b=2,",
    "a=1,a=2",
    "expr=a=b=c",
    "empty=",
    "spaced= 5 ,tabs=\t7\t",
    "quote_only=',single=\"",
    "plus=+,minus=-,plusminus=+-1",
    "hex=0x10,oct=0o7,text=hello world",
    "unicode=温度,digits=٣",
    "superscript=²",
    " temperature=0.6,top_p=0.95 ",
    "top_p=.5,trail=5.",
]


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("text", WELL_FORMED)
def test_parse_matches_lm_eval(text):
    ours = parse_gen_kwargs(text)
    theirs = simple_parse_args_string(text)
    assert list(ours) == list(theirs)
    for key in theirs:
        assert same(ours[key], theirs[key]), (key, ours[key], theirs[key])


@pytest.mark.parametrize("value", ["1", "-1", "+7", "007", "1.5", "-2e-3", "1E5", "inf", "-inf", "nan", "True",
                                   "false", "None", "'x'", '"1"', "''", "'", "", " 3 ", "abc", "1_0", "0x1",
                                   "+-1", "-", "+", "²", "٣", "1.", ".5", "1e", "e1", "--1"])
def test_value_coercion_matches_lm_eval(value):
    assert same(coerce_value(value), handle_arg_string(value))


def test_none_parses():
    assert parse_gen_kwargs(None) == simple_parse_args_string(None) == {}


@pytest.mark.parametrize("text, bad", [("temperature=0.6,top_k", "top_k"), ("=5", "=5"), ("a=1, ,b=2", "")])
def test_pair_without_key_value_is_an_error_naming_it(text, bad):
    with pytest.raises(ValueError) as error:
        parse_gen_kwargs(text)
    assert f"'{bad}'" in str(error.value)


def test_keys_are_stripped():
    assert parse_gen_kwargs("temperature=0.6, top_p=0.95") == {"temperature": 0.6, "top_p": 0.95}


def test_request_fields():
    fields = to_request_fields(parse_gen_kwargs("temperature=0.6,max_gen_toks=16000,until=Question:,do_sample=true"))
    assert fields == {"temperature": 0.6, "max_tokens": 16000, "stop": ["Question:"]}
