"""Account operations: sign-up (open, by invite or closed), registration by an admin,
login (throttled per username and address), logout and token authentication."""

from __future__ import annotations

import time
import uuid

from gobi.protocol import ErrorCode, User

from .auth import PasswordHashing, bearer_token, check_invite, new_token, token_hash
from .errors import ServiceError
from .store.base import MetadataStore, SessionRecord, UserRecord, UsernameTaken
from .throttle import LoginThrottle, SignupLimiter


def user_view(user: UserRecord) -> User:
    return User(id=user.id, username=user.username, is_admin=user.is_admin, created_at=user.created_at)


class Accounts:
    def __init__(self, store: MetadataStore, hashing: PasswordHashing, throttle: LoginThrottle,
                 signups: SignupLimiter, session_ttl: float, *, open_registration: bool = True,
                 require_invite: bool = False, naming_secret: bytes = b""):
        self.store = store
        self.hashing = hashing
        self.throttle = throttle
        self.signups = signups
        self.session_ttl = session_ttl
        self.open_registration = open_registration
        self.require_invite = require_invite
        self._naming_secret = naming_secret

    async def sign_up(self, username: str, password: str, invite: str | None, address: str) -> UserRecord:
        """Self-service registration (``POST /users/``): closed, by invite, or open; each
        address gets a few sign-ups per window before anything is hashed or stored."""
        if not self.open_registration:
            raise ServiceError(
                ErrorCode.REGISTRATION_CLOSED,
                "registration is closed; an administrator adds users with 'gobi user add'",
            )
        if self.require_invite:
            check_invite(self._naming_secret, username, invite)
        self.signups.take(address)
        return await self.register(username, password)

    async def register(self, username: str, password: str, is_admin: bool = False) -> UserRecord:
        user = UserRecord(
            id=uuid.uuid4().hex,
            username=username,
            password_hash=await self.hashing.hash(password),
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
        self.throttle.check(username, address)
        user = await self.store.user_by_name(username)
        ok = await self.hashing.verify(user.password_hash if user else None, password)
        if not ok or user is None:
            self.throttle.failed(username, address)
            raise ServiceError(ErrorCode.INVALID_CREDENTIALS, "wrong username or password")
        self.throttle.succeeded(username, address)
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
