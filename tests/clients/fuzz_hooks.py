"""Schemathesis checks for floe (loaded through SCHEMATHESIS_HOOKS by test_fuzz.py): every error
answer is the Iceberg ErrorModel, or for the token endpoint the spec's OAuthError."""
import schemathesis


@schemathesis.check
def error_model(ctx, response, case):
    """An error answer (4xx, 5xx) carries `{"error": {"message", "type", "code"}}` with the status as
    its code and a message a person can read."""
    if response.status_code < 400 or case.method.upper() == "HEAD":
        return
    try:
        body = response.json()
    except Exception as e:
        raise AssertionError(f"error answer {response.status_code} is not JSON: {response.text[:200]!r}") from e
    # The token endpoint's own answers are OAuthErrors; a method it does not serve is refused by the
    # router like any other, with an ErrorModel.
    if case.path == "/v1/oauth/tokens" and case.method.upper() == "POST":
        assert isinstance(body, dict) and isinstance(body.get("error"), str), f"not an OAuthError: {body}"
        return
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"not an ErrorModel: {body}"
    assert isinstance(error.get("type"), str) and error["type"], f"ErrorModel without a type: {body}"
    assert isinstance(error.get("message"), str) and error["message"], f"ErrorModel without a message: {body}"
    assert error.get("code") == response.status_code, f"ErrorModel code is not the status: {body}"
