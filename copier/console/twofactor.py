"""The login's second step and the two-factor pages: the code after the password, the
enrolment (an authenticator app, then recovery codes shown once), and the lockout page.

Pages of the copier's own on django-otp's devices (copier.services.second_factor), not
django-two-factor-auth's: a few forms in the admin's frame, under the strict
Content-Security-Policy (the QR code is inline SVG, drawn by segno; no script at all).

A user past the password but owing a code or an enrolment is logged in but reaches nothing
else (copier.shell.middleware.SecondFactorMiddleware, and the site's has_permission): these
pages are the way on, or the logout. A wrong code counts as a failed login for django-axes
(the same user and address: five in all lock the pair out, password guesses included).
"""

from __future__ import annotations

import base64
from typing import Any

import django_otp
import segno
from axes.handlers.proxy import AxesProxyHandler
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import logout
from django.contrib.auth.signals import user_login_failed
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from copier.services import second_factor


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code", max_length=40, strip=True,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True,
                                      "spellcheck": "false", "autocapitalize": "off"}))


def _next(request: HttpRequest) -> str:
    """Where to go once through: the page first asked for, if it is on this site."""
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    if wanted and url_has_allowed_host_and_scheme(wanted, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return wanted
    return reverse(settings.LOGIN_REDIRECT_URL)


def _with_next(url: str, next_url: str) -> str:
    return f"{url}?{urlencode({'next': next_url})}"


def _context(request: HttpRequest, title: str, **more: Any) -> dict[str, Any]:
    return {**admin.site.each_context(request), "title": title, "next": _next(request), **more}


def _credentials(user: Any) -> dict[str, str]:
    return {"username": user.get_username()}


def _staff_or_login(request: HttpRequest) -> HttpResponse | None:
    user = request.user
    if user.is_authenticated and user.is_active and user.is_staff:
        return None
    return redirect_to_login(request.get_full_path(), reverse(settings.LOGIN_URL))


def _refused(request: HttpRequest, form: CodeForm, wait: bool) -> HttpResponse | None:
    """A wrong code: said on the form, and counted as a failed login (django-axes); the
    lockout page, with the session ended, once the user and address are locked out."""
    user = request.user
    form.add_error("code", "Too many wrong codes: wait a few seconds, then try again."
                   if wait else "That code is not right, or was used already.")
    user_login_failed.send(sender=__name__, credentials=_credentials(user), request=request)
    if getattr(request, "axes_locked_out", False):
        credentials = _credentials(user)
        logout(request)
        return lockout_response(request, None, credentials)
    return None


def _locked(request: HttpRequest) -> HttpResponse | None:
    """Locked out meanwhile (from another tab, or the password step elsewhere): no code
    is even checked."""
    credentials = _credentials(request.user)
    if AxesProxyHandler.is_allowed(request, credentials):
        return None
    logout(request)
    return lockout_response(request, None, credentials)


@never_cache
@sensitive_post_parameters("code")
def verify(request: HttpRequest) -> HttpResponse:
    """The code after the password: from the authenticator app, or a recovery code."""
    if (to_login := _staff_or_login(request)) is not None:
        return to_login
    user, next_url = request.user, _next(request)
    owed = second_factor.second_factor_owed(user)
    if owed == "enrol":
        return HttpResponseRedirect(_with_next(reverse("otp_enrol"), next_url))
    if owed is None:
        return HttpResponseRedirect(next_url)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if (locked := _locked(request)) is not None:
            return locked
        checked = second_factor.second_factor_check(user=user, code=form.cleaned_data["code"])
        if checked.device is not None:
            django_otp.login(request, checked.device)
            request.session.cycle_key()  # a new session id for the verified session
            if checked.recovery_left is not None:
                messages.warning(request, f"You logged in with a recovery code; "
                                          f"{checked.recovery_left} left. Each works once: "
                                          "make new ones on the two-factor page.")
            return HttpResponseRedirect(next_url)
        if (lockout := _refused(request, form, checked.wait)) is not None:
            return lockout
    return render(request, "copier/twofactor/verify.html",
                  _context(request, "Two-factor login", form=form))


def qr_svg(url: str) -> SafeString:
    """The otpauth:// URL as an inline SVG QR code: markup of our own making (segno's
    paths, no script, no style attribute), so the policy has nothing to refuse."""
    code = segno.make(url, error="m")
    return mark_safe(code.svg_inline(scale=5, dark="#000", light="#fff",  # noqa: S308
                                     svgclass="otp-qr", lineclass=None,
                                     title="QR code for your authenticator app"))


def _secret_text(device: Any) -> str:
    """The key as an app takes it typed in: base32, in groups of four."""
    key = base64.b32encode(device.bin_key).decode()
    return " ".join(key[i:i + 4] for i in range(0, len(key), 4))


@never_cache
@sensitive_post_parameters("code")
def enrol(request: HttpRequest) -> HttpResponse:
    """Set up the authenticator app (scan, then type its first code), get the recovery
    codes once; or, once set up, see how many recovery codes are left and make new ones."""
    if (to_login := _staff_or_login(request)) is not None:
        return to_login
    user, next_url = request.user, _next(request)
    if second_factor.second_factor_owed(user) == "code":
        return HttpResponseRedirect(_with_next(reverse("otp_verify"), next_url))
    form = CodeForm(request.POST or None)
    if second_factor.has_second_factor(user):
        return _enrolled_page(request, form)
    if request.method == "POST" and form.is_valid():
        enrolled = second_factor.totp_enrol_confirm(user=user, code=form.cleaned_data["code"])
        if enrolled is not None:
            django_otp.login(request, enrolled.device)
            request.session.cycle_key()
            return _codes_page(request, enrolled.recovery_codes, first=True)
        form.add_error("code", "That code is not right: check the app shows the copier's "
                               "entry, and type the code it shows now.")
    device = second_factor.totp_device_pending(user=user)
    return render(request, "copier/twofactor/enrol.html", _context(
        request, "Set up two-factor login", form=form, qr=qr_svg(device.config_url),
        secret=_secret_text(device), required=second_factor.enrolment_required(user)))


def _enrolled_page(request: HttpRequest, form: CodeForm) -> HttpResponse:
    user = request.user
    if request.method == "POST" and form.is_valid():
        codes = second_factor.recovery_codes_renew(user=user, code=form.cleaned_data["code"])
        if codes is not None:
            return _codes_page(request, codes, first=False)
        form.add_error("code", "That code is not right, or was used already.")
    return render(request, "copier/twofactor/enrolled.html", _context(
        request, "Two-factor login", form=form,
        recovery_left=second_factor.recovery_codes_left(user)))


def _codes_page(request: HttpRequest, codes: list[str], *, first: bool) -> HttpResponse:
    """The recovery codes, this once: they are not shown again (never_cache: not kept by
    the browser either)."""
    if first:
        messages.success(request, "Two-factor login is on: from now on the login asks for "
                                  "a code from the app after the password.")
    return render(request, "copier/twofactor/recovery_codes.html", _context(
        request, "Your recovery codes", codes=codes, first=first))


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict[str, Any] | None = None) -> HttpResponse:
    """django-axes' AXES_LOCKOUT_CALLABLE: a plain page, 429, saying what happened and
    what to do; the same for every user name (it tells nobody whether a user exists)."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    return render(request, "copier/twofactor/locked.html", _context(
        request, "Login locked", minutes=minutes, limit=settings.AXES_FAILURE_LIMIT),
        status=429)  # Too Many Requests, as axes answers
