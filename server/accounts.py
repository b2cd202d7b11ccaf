"""Account operations: registration, login, logout and token authentication."""

from __future__ import annotations

import time
import uuid

from gobi.protocol import ErrorCode, User

from .auth import LoginLimiter, bearer_token, hash_password, new_token, token_hash, verify_password
from .errors import ServiceError
from .store.base import MetadataStore, SessionRecord, UserRecord, UsernameTaken


def user_view(user: UserRecord) -> User:
    return User(id=user.id, username=user.username, is_admin=user.is_admin, created_at=user.created_at)


class Accounts:
    def __init__(self, store: MetadataStore, limiter: LoginLimiter, session_ttl: float):
        self.store = store
        self.limiter = limiter
        self.session_ttl = session_ttl

    async def register(self, username: str, password: str, is_admin: bool = False) -> UserRecord:
        user = UserRecord(
            id=uuid.uuid4().hex,
            username=username,
            password_hash=await hash_password(password),
            is_admin=is_admin,
            created_at=time.time(),
        )
        try:
            await self.store.create_user(user)
        except UsernameTaken:
            raise ServiceError(
                ErrorCode.USERNAME_TAKEN, f"username {username!r} is taken"
            ) from None
        return user

    async def login(self, username: str, password: str, address: str) -> tuple[str, UserRecord]:
        self.limiter.check(username, address)
        user = await self.store.user_by_name(username)
        ok = await verify_password(user.password_hash if user else None, password)
        if not ok or user is None:
            self.limiter.failed(username, address)
            raise ServiceError(ErrorCode.INVALID_CREDENTIALS, "wrong username or password")
        self.limiter.succeeded(username)
        token = new_token()
        now = time.time()
        await self.store.create_session(
            SessionRecord(token_hash(token), user.id, now, now + self.session_ttl)
        )
        return token, user

    async def authenticate(self, authorization: str | None) -> tuple[UserRecord, str]:
        """The user behind a bearer header and the token's hash; 401 otherwise."""
        digest = token_hash(bearer_token(authorization))
        found = await self.store.session_user(digest)
        if found is None or found[0].expires_at < time.time():
            raise ServiceError(ErrorCode.UNAUTHENTICATED, "token is invalid, expired or revoked")
        return found[1], digest

    async def logout(self, digest: str) -> None:
        await self.store.delete_session(digest)
