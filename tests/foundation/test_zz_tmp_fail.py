def test_fails(kafka_bootstrap: str) -> None:
    assert kafka_bootstrap == "nope"
