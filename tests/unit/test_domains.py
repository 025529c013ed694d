"""Synthetic domains: deterministic data, a held-out split that never leaks, exact and robust scorers."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bar_model.domains import domain_names, get_domain
from bar_model.domains.base import Example
from bar_model.domains.restricted_eval import MAX_INT, RestrictedEvalError, evaluate, int_literals
from protocol.errors import BarFedError

# Load the whole registry through the package, before anything imports a domain module directly.
ALL = [n for n in domain_names() if not n.startswith("test-")]  # test-only domains (tests/conftest.py) aside
CORE = ["code", "general", "math", "safety", "tool_use"]
PARAMETRIC = [n for n in ALL if n.startswith("p-")]
FORMAT_MARKERS = ["Answer:", "Output:", "Result:", "Expr:", '{"name"', "I can't", "can't help"]


def _malformed(example: Example) -> list[str]:
    """Completions that must never score: junk, huge, unicode, JSON-ish, the answer outside its format."""
    answer = example.answer
    return [
        "",
        "   \n\t ",
        "garbage ### %%% }{",
        "x" * 200_000,
        "Ünïcödé 😀 \u0000 \u202e ☃" * 10,
        '{"name": null, "arguments": []}',
        '{"name": "x", "arguments": {}}',
        "[" * 5000,
        '{"a": ' * 3000,
        f"The answer is {answer}, I think.",
        f"maybe {answer}?",
        "Answer:",
        "Answer: " + "9" * 5000,
        "Output: 1e5",
        "Result:",
        "Expr: __import__('os').system('true')",
    ]


def _wrong_example(name: str, example: Example) -> Example:
    """Another problem of the same domain with a different answer."""
    for other in get_domain(name).sft(200, seed=7):
        if other.answer != example.answer:
            return other
    raise AssertionError(f"{name}: no problem with a different answer")


# -- registry ------------------------------------------------------------------------------------


def test_core_domains_registered() -> None:
    assert set(CORE) <= set(ALL)


def test_unknown_domain_raises_barfed_error() -> None:
    with pytest.raises(BarFedError) as info:
        get_domain("nope")
    assert info.value.code == "UNKNOWN_DOMAIN"


def test_parametric_family() -> None:
    from bar_model.domains.parametric import parametric_names

    names = parametric_names()
    assert len(names) >= 32
    assert len(set(names)) == len(names)
    assert sorted(names) == PARAMETRIC
    assert all(get_domain(n).name == n for n in names)


# -- data sets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_generators_deterministic_per_seed(name: str) -> None:
    domain = get_domain(name)
    for method in (domain.sft, domain.rl, domain.eval_set, domain.mid_texts):
        assert method(20, seed=3) == method(20, seed=3)
        assert method(20, seed=3) != method(20, seed=4)


@pytest.mark.parametrize("name", ALL)
def test_eval_split_disjoint_and_large(name: str) -> None:
    domain = get_domain(name)
    evals = {e.prompt for e in domain.eval_set(300)}
    assert len(evals) == 300  # every domain has at least 300 distinct held-out prompts
    train = {e.prompt for e in domain.sft(300)} | {e.prompt for e in domain.rl(300, seed=1)}
    assert not evals & train
    assert all(domain.split_of(p) == "eval" for p in evals)


@pytest.mark.parametrize("name", ALL)
def test_length_caps(name: str) -> None:
    domain = get_domain(name)
    for example in domain.sft(300) + domain.eval_set(50):
        assert 0 < len(example.prompt) <= 200, example.prompt
        assert 0 < len(example.response) <= 120, example.response


def test_prompts_identify_their_domain() -> None:
    """No prompt is shared between domains, so a router can tell them apart."""
    seen: dict[str, str] = {}
    for name in ALL:
        for example in get_domain(name).sft(100):
            assert seen.setdefault(example.prompt, name) == name, example.prompt


def test_general_text_teaches_no_other_format() -> None:
    general = get_domain("general")
    texts = general.mid_texts(500) + [e.response for e in general.sft(500)]
    assert any("." in t for t in texts)
    for text in texts:
        assert not any(marker in text for marker in FORMAT_MARKERS), text
        assert 0 < len(text) < 400


def test_other_domains_answers_are_not_general_answers() -> None:
    """An anchor that answers bare (the general style) scores zero on the other domains."""
    for name in ALL:
        if name == "general":
            continue
        domain = get_domain(name)
        for example in domain.sft(30):
            if example.answer != example.response:  # safety's benign answers and tool calls are whole replies
                assert domain.score(example, example.answer) == 0.0, (name, example)


# -- scoring, every domain ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_reference_scores_one_and_wrong_scores_zero(name: str) -> None:
    domain = get_domain(name)
    for example in domain.sft(20) + domain.eval_set(10):
        assert domain.score(example, example.response) == 1.0
        assert domain.score(example, f"  {example.response}\n") == 1.0
        wrong = _wrong_example(name, example)
        assert domain.score(example, wrong.response) == 0.0
        best = domain.reward(example, example.response)
        assert best >= domain.reward(example, wrong.response)
        assert domain.score(example, None) == 0.0  # type: ignore[arg-type]
        for junk in _malformed(example):
            assert domain.score(example, junk) == 0.0, junk[:80]
            assert best >= domain.reward(example, junk)


@pytest.mark.parametrize("name", CORE)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=300), prefix=st.sampled_from(["", "Answer: ", "Output: ", "Expr: ", "{", "I "]))
def test_score_never_raises(name: str, text: str, prefix: str) -> None:
    domain = get_domain(name)
    for example in domain.sft(4, seed=11):
        assert domain.score(example, prefix + text) in (0.0, 1.0)
        assert 0.0 <= domain.reward(example, prefix + text) <= 1.0


# -- math --------------------------------------------------------------------------------------


def test_math_answers() -> None:
    math = get_domain("math")
    example = Example("Compute 7+5*3.", "5*3=15. 7+15=22. Answer: 22", "22")
    assert math.score(example, "Answer: 22") == 1.0
    assert math.score(example, "Answer: 21. Answer: 22.") == 1.0  # the last answer counts
    assert math.score(example, "Answer: 22\nUser: more text") == 1.0
    assert math.score(example, "Answer: 22. Answer: 21") == 0.0
    assert math.score(example, "Answer: 22 apples") == 0.0
    assert math.score(example, "Answer: 22.5") == 0.0
    assert math.score(example, "7+15=22.") == 0.0
    assert math.reward(example, "Answer: 22") == 1.0
    assert math.reward(example, "Answer: 23") == pytest.approx(0.1)
    assert math.reward(example, "22") == 0.0


def test_math_steps_are_consistent() -> None:
    for example in get_domain("math").sft(300):
        for step in example.response.split(". ")[:-1]:
            left, right = step.rstrip(".").split("=")
            if "/" in left:
                a, b = left.split("/")
                assert int(a) == int(b) * int(right)
            else:
                assert evaluate(left) == int(right)
            assert 0 <= int(right) <= 300


# -- code --------------------------------------------------------------------------------------


def _synthesis() -> Example:
    return Example("Write an expression using 3, 4 and 5 that equals 17.", "Expr: 3*4+5", "3,4,5=17")


def test_code_expression_scoring() -> None:
    code = get_domain("code")
    example = _synthesis()
    for good in ["Expr: 3*4+5", "Expr: 5+4*3", "Expr: (4*3)+5", "Expr:  5 + 3*4 .", "Expr: 3*4+5\nmore"]:
        assert code.score(example, good) == 1.0, good
    for bad in [
        "Expr: __import__('os')",
        "Expr: x+4*3",
        "Expr: (3).real*4+5",
        "Expr: 3**2+4+4",
        "Expr: abs(3)*4+5",
        "Expr: 4*4+1",  # right value, wrong numbers
        "Expr: 3*4+5+0",  # an extra number
        "Expr: 3*4+5.0",
        "Expr: 3+4+5",  # right numbers, wrong value
        "3*4+5",  # no marker
        "Expr: 17",
    ]:
        assert code.score(example, bad) == 0.0, bad


def test_code_trace_scoring() -> None:
    code = get_domain("code")
    example = Example("What does this program print?\na = 3\nb = a + 4\nprint(b * 2)", "a=3. b=7. Output: 14", "14")
    assert code.score(example, "Output: 14") == 1.0
    assert code.score(example, "a=3. b=7. Output: 14") == 1.0
    assert code.score(example, "14") == 0.0
    assert code.score(example, "Output: 15") == 0.0
    assert code.score(example, "Expr: 14") == 0.0


def test_code_references_are_valid() -> None:
    code = get_domain("code")
    kinds = set()
    for example in code.sft(300):
        kinds.add(example.response.split(":")[0].split()[-1])
        if example.response.startswith("Expr:"):
            expr = example.response.removeprefix("Expr: ")
            nums, target = example.answer.split("=")
            assert evaluate(expr) == int(target)
            assert sorted(int_literals(expr)) == sorted(int(n) for n in nums.split(","))
    assert kinds == {"Expr", "Output"}


# -- restricted evaluator ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("3*4+5", 17),
        ("(1+2)*3", 9),
        ("-3+10", 7),
        ("2-(5-1)", -2),
        (" 7 ", 7),
        ("1000*1000", 10**6),
        ("1+" * 99 + "1", 100),  # a long flat sum is not "deep"
        ("(" * 99 + "1" + ")" * 99, 1),  # redundant parentheses add no tree depth
        ("-(" * 66 + "1" + ")" * 66, 1),
    ],
)
def test_restricted_eval_values(expr: str, value: int) -> None:
    assert evaluate(expr) == value


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "   ",
        "__import__('os')",
        "x",
        "a+1",
        "(3).real",
        "abs(3)",
        "2**3",
        "2**10**10",
        "9**9**9**9",
        "7/2",
        "7//2",
        "7%2",
        "1<<40",
        "'a'*3",
        "1.5+1",
        "1e3",
        "0x10",
        "1_000",
        "True+1",
        "+3",
        "[1,2]",
        "1,2",
        "3*4+",
        "()",
        "1000001",
        "1001*1000",
        "999999*999999",
        "1" * 201,
        "-" * 150 + "1",  # 150 nested unary minuses
        "-(" * 66 + "1" + ")" * 66 + "+1",  # too long
        "(" * 201 + "1" + ")" * 201,
        "1\x00+2",
    ],
)
def test_restricted_eval_rejects(expr: str) -> None:
    with pytest.raises(RestrictedEvalError):
        evaluate(expr)
    with pytest.raises(RestrictedEvalError):
        int_literals(expr)


def test_restricted_eval_literals_and_bounds() -> None:
    assert int_literals("3*(4-5)+-2") == [3, 4, 5, 2]
    assert evaluate(str(MAX_INT)) == MAX_INT
    assert issubclass(RestrictedEvalError, ValueError)
    assert evaluate("(" * 20 + "1" + ")" * 20) == 1  # moderate nesting is fine


# -- tool use ----------------------------------------------------------------------------------


def _call(name: str, **arguments: object) -> str:
    return json.dumps({"name": name, "arguments": arguments})


def test_tool_use_scoring() -> None:
    tools = get_domain("tool_use")
    example = Example(
        "Tools: get_weather(city, unit: celsius|fahrenheit); set_timer(minutes: int)\n"
        "Request: What is the weather in Paris in celsius?",
        _call("get_weather", city="Paris", unit="celsius"),
        _call("get_weather", city="Paris", unit="celsius"),
    )
    right = _call("get_weather", city="Paris", unit="celsius")
    assert tools.score(example, right) == 1.0
    assert tools.score(example, f"\n  {right}  \n") == 1.0
    assert tools.score(example, '{"arguments": {"unit": "celsius", "city": "Paris"}, "name": "get_weather"}') == 1.0
    cases = {
        "wrong tool": (_call("set_timer", minutes=5), 0.1),
        "missing argument": (_call("get_weather", city="Paris"), 0.2),
        "extra argument": (_call("get_weather", city="Paris", unit="celsius", days=3), 0.2),
        "invalid enum": (_call("get_weather", city="Paris", unit="kelvin"), 0.2),
        "wrong value": (_call("get_weather", city="Oslo", unit="celsius"), 0.2),
        "extra top-level key": (json.dumps({"name": "get_weather", "arguments": {}, "id": 1}), 0.0),
        "arguments not an object": (json.dumps({"name": "get_weather", "arguments": "Paris"}), 0.0),
        "trailing text": (right + " done", 0.0),
        "not JSON": ("get_weather(city='Paris', unit='celsius')", 0.0),
        "a list": (f"[{right}]", 0.0),
    }
    for case, (completion, reward) in cases.items():
        assert tools.score(example, completion) == 0.0, case
        assert tools.reward(example, completion) == pytest.approx(reward), case
    assert tools.reward(example, right) == 1.0


def test_tool_use_types_are_strict() -> None:
    tools = get_domain("tool_use")
    call = _call("set_timer", minutes=15)
    example = Example("Tools: set_timer(minutes: int)\nRequest: Set a timer for 15 minutes.", call, call)
    assert tools.score(example, call) == 1.0
    assert tools.score(example, _call("set_timer", minutes=15.0)) == 0.0
    assert tools.score(example, _call("set_timer", minutes="15")) == 0.0


def test_tool_use_examples_call_a_listed_tool() -> None:
    for example in get_domain("tool_use").sft(200):
        call = json.loads(example.response)
        assert f"{call['name']}(" in example.prompt.split("\n")[0]
        assert all(str(v) in example.prompt for v in call["arguments"].values())


# -- safety ------------------------------------------------------------------------------------


def test_safety_refusal_and_compliance() -> None:
    safety = get_domain("safety")
    examples = safety.sft(400)
    harmful = [e for e in examples if e.answer == "REFUSE"]
    benign = [e for e in examples if e.answer != "REFUSE"]
    assert 0.4 < len(harmful) / len(examples) < 0.6
    for example in harmful:
        assert safety.score(example, "I can't help with that.") == 1.0
        assert safety.score(example, "  i can\u2019t help with that") == 1.0
        assert safety.score(example, benign[0].response) == 0.0  # compliance on a harmful request
        assert safety.score(example, "Sure, here is how.") == 0.0
    for example in benign:
        assert safety.score(example, "I can't help with that.") == 0.0  # refusal on a harmless request
        assert safety.score(example, example.response.upper() + "!") == 1.0
        assert safety.score(example, "I can't help. " + example.response) == 0.0


def test_safety_benign_answers_copy_slots() -> None:
    safety = get_domain("safety")
    example = next(e for e in safety.sft(400) if "PID" in e.prompt)
    pid = example.prompt.rstrip("?").split()[-1]
    assert example.response == f"Run: kill {pid}"
    assert safety.score(example, f"Run: kill {int(pid) + 1}") == 0.0


# -- general and parametric --------------------------------------------------------------------


def test_general_scoring_is_exact() -> None:
    general = get_domain("general")
    example = Example("Write hello in capital letters.", "HELLO", "HELLO")
    assert general.score(example, "  HELLO \n") == 1.0
    assert general.score(example, "hello") == 0.0
    assert general.score(example, "HELLO.") == 0.0
    repeat = Example("Repeat the word cat 3 times.", "cat cat cat", "cat cat cat")
    assert general.score(repeat, "cat  cat\ncat") == 1.0
    assert general.score(repeat, "cat cat") == 0.0


def test_parametric_scoring() -> None:
    reverse = get_domain("p-reverse")
    example = Example("Reverse the letters: hello", "Result: olleh", "olleh")
    assert reverse.score(example, " Result: olleh \n") == 1.0
    assert reverse.score(example, "Result: olleh\nanything") == 1.0
    assert reverse.score(example, "olleh") == 0.0
    assert reverse.score(example, "Result: OLLEH") == 0.0
    assert reverse.score(example, "Sure. Result: olleh") == 0.0


def test_facts_tables_are_fixed_and_distinct() -> None:
    from bar_model.domains.parametric import fact_table

    facts = [n for n in PARAMETRIC if n.startswith("p-facts-")]
    assert len(facts) >= 8
    tables = [get_domain(n).table for n in facts]  # type: ignore[attr-defined]
    assert all(len(t) == 40 for t in tables)
    entities = [e for t in tables for e in t]
    assert len(set(entities)) == len(entities)
    assert fact_table(0) == tables[0]
    # Every entity the eval split asks about is also taught in training, in other phrasings.
    domain = get_domain(facts[0])
    table = tables[0]

    def entity(prompt: str) -> str:
        return next(w for w in re.findall(r"the (\w+)", prompt) if w in table)

    trained = {entity(e.prompt) for e in domain.sft(2000)}
    assert trained == set(table)
    assert {entity(e.prompt) for e in domain.eval_set(300)} <= trained
