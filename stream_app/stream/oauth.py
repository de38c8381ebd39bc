"""SASL/OAUTHBEARER tokens for the Faust worker, by the OIDC client-credentials grant.

The confluent-kafka clients fetch their tokens inside librdkafka (`sasl.oauthbearer.method=oidc`);
aiokafka, under Faust, wants a token provider object instead. This one performs the same grant
from the same `sasl.oauthbearer.*` properties (settings.py), so one set of variables serves
both: a POST of `grant_type=client_credentials` (and the scope) to the token endpoint, the
client id and secret as HTTP Basic credentials, as librdkafka sends them. A token is reused
until REFRESH_AT of its lifetime has passed, so reconnects do not each ask for a new one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping

from aiokafka.abc import AbstractTokenProvider

from stream_app.core.errors import MeterwatchError

REFRESH_AT = 0.8  # of a token's lifetime, as librdkafka refreshes
DEFAULT_LIFETIME_S = 60.0  # a response without expires_in: ask again soon
TIMEOUT_S = 10.0


class TokenError(MeterwatchError):
    """The token endpoint refused or did not answer; the message never holds the secret."""


class OidcTokenProvider(AbstractTokenProvider):
    """aiokafka's `sasl_oauth_token_provider`: one cached token, fetched again when due."""

    def __init__(self, endpoint: str, client_id: str, client_secret, *, scope: str | None = None,
                 extensions: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.endpoint = endpoint
        self.client_id = client_id
        self._secret = client_secret  # a settings.Secret: its repr is a mask
        self.scope = scope
        self._extensions = dict(extensions or {})
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    def from_properties(cls, properties: Mapping[str, object]) -> OidcTokenProvider:
        """From librdkafka's names: sasl.oauthbearer.token.endpoint.url, .client.id,
        .client.secret, .scope and .extensions (`key=value,key=value`)."""
        def get(name: str) -> str | None:
            value = properties.get(f"sasl.oauthbearer.{name}")
            return None if value is None else str(value)

        extensions = dict(part.split("=", 1) for part in (get("extensions") or "").split(",")
                          if "=" in part)
        endpoint, client_id = get("token.endpoint.url"), get("client.id")
        assert endpoint and client_id  # KafkaSettings refuses OAUTHBEARER without them
        return cls(endpoint, client_id, properties["sasl.oauthbearer.client.secret"],
                   scope=get("scope"), extensions=extensions)

    def __repr__(self) -> str:
        return f"<OidcTokenProvider {self.endpoint} client {self.client_id}>"

    async def token(self) -> str:
        async with self._lock:  # many connections at once share one fetch
            if self._token is None or self._clock() >= self._refresh_at:
                token, lifetime = await asyncio.get_running_loop().run_in_executor(
                    None, self.fetch)
                self._token, self._refresh_at = token, self._clock() + lifetime * REFRESH_AT
            return self._token

    def extensions(self) -> dict[str, str]:
        return dict(self._extensions)

    def fetch(self) -> tuple[str, float]:
        """(access token, lifetime in seconds) from the endpoint; blocking."""
        secret = self._secret.reveal() if hasattr(self._secret, "reveal") else str(self._secret)
        form = {"grant_type": "client_credentials", **({"scope": self.scope} if self.scope else {})}
        basic = base64.b64encode(f"{self.client_id}:{secret}".encode()).decode()
        request = urllib.request.Request(
            self.endpoint, data=urllib.parse.urlencode(form).encode(), method="POST",
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json",
                     "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise TokenError(f"token endpoint {self.endpoint} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise TokenError(f"token endpoint {self.endpoint} not reached: {exc}") from None
        except ValueError:
            raise TokenError(f"token endpoint {self.endpoint} answered no JSON") from None
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise TokenError(f"token endpoint {self.endpoint} answered no access_token")
        lifetime = answer.get("expires_in")
        return token, float(lifetime) if isinstance(lifetime, int | float) else DEFAULT_LIFETIME_S
