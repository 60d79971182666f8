from myriad.errors import AuthenticationError, InvalidRequest, RateLimited
from myriad.server.errors import error_headers


def test_error_headers():
    assert error_headers(AuthenticationError("no key")) == {"WWW-Authenticate": "Bearer"}
    assert error_headers(RateLimited("slow down", details={"retry_after": 2.4})) == {"Retry-After": "2"}
    assert error_headers(RateLimited("slow down", details={"retry_after": 0.2})) == {"Retry-After": "1"}
    assert error_headers(RateLimited("slow down", details={"retry_after": None})) is None
    assert error_headers(InvalidRequest("bad")) is None
